# fieldnode firmware library: frame format v1 (docs/frame-format.md). Import the submodules.
