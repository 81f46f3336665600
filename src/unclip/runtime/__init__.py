"""Where and how networks run: devices and processes, precision, compile backends (torch.compile,
ONNX Runtime), the user cache, and safetensors weights checked against their configs."""
