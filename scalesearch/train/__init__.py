"""Short training: the recipe and the loop, and the step's form timed on the machine."""
