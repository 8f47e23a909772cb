"""Calculators: pure functions of numbers, no Keras. A model's footprint (parameters, FLOPs, memory), a training
run's cost, serving prices, growth trends and the accelerator datasheets they share (:mod:`.accelerators`)."""
