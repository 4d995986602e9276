"""Quantisers, one backend per module: ONNX fp16, ONNX int8, TFLite (ai-edge-quantizer)."""
