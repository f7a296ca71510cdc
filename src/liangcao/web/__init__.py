"""Web assets served by the node (the consumer verify page); shipped with the package, no CDN."""
