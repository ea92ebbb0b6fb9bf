"""The ``moehealth`` command line; the work lives in client/, server/, shared_model/, simulation/."""
