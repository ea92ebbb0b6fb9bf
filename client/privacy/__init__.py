"""Patient-level DP-SGD at a site: settings, the fixed mechanism and its budget, private randomness,
Poisson sampling of patients, the DP round, the site's ledger, empirical audit."""
