"""One file per paper. Each file registers its module(s) with ``attnzoo.registry.register``;
the registry imports every file of this package, so a new file needs no edit here."""
