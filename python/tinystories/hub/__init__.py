"""Files from the network: what exists (:mod:`.registry`), how it is fetched
(:mod:`.download`) and where it is kept (:mod:`.cache`)."""
