"""The ``local`` provider: LoRA fine-tuning on this machine, in a child process per job."""
