"""HF interoperability: the parameter-name mapping (`mapping`) and safetensors checkpoints
read and written in HF's layout (`convert`)."""
