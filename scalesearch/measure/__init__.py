"""What a network costs: the torch builder, and params, FLOPs and activations counted with fvcore (and its analytic twins)."""
