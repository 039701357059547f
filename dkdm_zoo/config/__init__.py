"""Configuration: recipes (the TOML schema and ``TrainConfig``), checking a recipe against the
registry, the registered recipes, flags over a recipe, what a resumed run may change, and a
resolved recipe built into teacher, student and method. Torch-free until something is built."""
