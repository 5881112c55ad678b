"""LEWEL evaluation protocols: ``knn`` (pre-training monitor), ``linear`` (main_lincls), ``semi`` (main_semi)."""
