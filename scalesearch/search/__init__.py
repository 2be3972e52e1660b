"""Step 1 and step 2: the grid space, the phi = 1 search, successive halving, the ranking, rank agreement, the family."""
