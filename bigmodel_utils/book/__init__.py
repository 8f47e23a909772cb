"""The book's plumbing: run profiles, results, glued values and shown source (:mod:`.runtime`), the plot
theme (:mod:`.plots`) and concept diagrams (:mod:`.diagrams`). Imports nothing above the backend seam."""
