"""What the chapters do with a trained model, one technique a module: adapt it (LoRA, quantisation), export it,
explain it, train it privately, shard it, sweep its size (scaling laws) and measure its decoding."""
