"""The 2.6 study's workflows: a confirmation grid, stability over subsamples, the study
matrix across tasks, depths and data sizes, and presets written from a finding."""
