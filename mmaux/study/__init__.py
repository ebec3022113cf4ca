"""Studies: grids of training runs and the statistics that compare them."""
