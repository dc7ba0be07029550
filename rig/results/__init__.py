"""What a run found: the results file, JUnit, the comparison with the base, reports, KCIDB, history.  Imports only rig.core."""
