"""Calculators: pure functions of numbers, no Keras. A model's footprint (parameters, FLOPs, memory), a training
run's cost, serving prices and growth trends."""
