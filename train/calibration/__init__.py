"""Per-expert W4A4 calibration of a few-step dual-expert student, and its evaluation.

- `stats`: per-layer input statistics on the student's own trajectory, tagged (expert, step, layer)
- `smoothing`, `gptq`, `sensitivity`, `layers`: the calibration algorithms
- `pipeline.calibrate`: the sequential per-expert flow (`python -m train.calibrate`)
- `manifest`: the calibrated student on disk; `load_quantized_student(path)`
- `evaluation`, `metrics`, `report`: `python -m train.evaluate`
"""

from train.calibration.manifest import load_quantized_student, save_quantized_student
from train.calibration.pipeline import CalibrationOptions, calibrate

__all__ = ["CalibrationOptions", "calibrate", "load_quantized_student", "save_quantized_student"]
