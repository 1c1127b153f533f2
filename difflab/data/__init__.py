"""Data: the procedural shapes world (:mod:`difflab.data.shapes`), real images shipped by
packages (:mod:`difflab.data.real`) and users' image folders (:mod:`difflab.data.folder`)."""
