"""Parameter-efficient fine-tuning: LoRA (`lora`) and the path rules that turn frozen,
trainable, LoRA, prefix and adapter parameters into optax partitions (`partitions`)."""
