"""Sample-level DP-SGD at a site: settings, budget plan, the DP round, empirical audit."""
