"""Teacher fine-tuning, bulk teacher labelling and student distillation (needs torch)."""
