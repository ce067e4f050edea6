"""Text conditioning: prompt cleaning, umT5 tokenization, encoding to the DiT context, caching.

Data path: prompt -> `clean_text` -> `Tokenizer` (ids, mask; `</s>` appended, padded to 512) ->
`UMT5Encoder` -> `encode_prompts` (trim to length, zero-pad) -> context `[B, 512, 4096]`.
"""

from wanjax.text.cache import TextCacheWriter, TextEmbeddingCache, build_text_cache, write_negative
from wanjax.text.encode import PromptEmbeddings, TextEncoder, encode_prompts, zero_pad_context
from wanjax.text.prompts import SAMPLE_NEG_PROMPT
from wanjax.text.tokenizer import TEXT_LEN, Tokenizer, Tokens, clean_text

__all__ = [
    "SAMPLE_NEG_PROMPT",
    "TEXT_LEN",
    "PromptEmbeddings",
    "TextCacheWriter",
    "TextEmbeddingCache",
    "TextEncoder",
    "Tokenizer",
    "Tokens",
    "build_text_cache",
    "clean_text",
    "encode_prompts",
    "write_negative",
    "zero_pad_context",
]
