"""The network as data: the spec (Eq. 1), the block registry, the scaler (Eq. 3), the named bases, the proxy geometry. No torch."""
