"""Training loops, the inference loop, the solver, run folders and process memory."""
