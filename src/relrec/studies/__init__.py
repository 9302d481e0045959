"""Studies: paper tables, the MTMH and CAViaR studies, run evaluations and reports (they train and score models, so they sit above train/)."""
