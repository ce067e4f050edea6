"""Prompt constants from the official Wan2.2 configs."""

# `wan_shared_cfg.sample_neg_prompt` in Wan-Video/Wan2.2 `wan/configs/shared_config.py`: the
# default negative prompt of every official pipeline (spec gotcha 16), used as the unconditional
# context for classifier-free guidance. In English roughly: garish colours, overexposed, static,
# blurry details, subtitles, style, artwork, painting, picture, still, greyish overall, worst
# quality, low quality, JPEG artefacts, ugly, mutilated, extra fingers, badly drawn hands, badly
# drawn face, deformed, disfigured, malformed limbs, fused fingers, motionless scene, cluttered
# background, three legs, crowded background, walking backwards. Note that `clean_text` (ftfy)
# turns its full-width commas into ASCII ones before tokenization, as in the official run.
SAMPLE_NEG_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的"
    "肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
