"""EnMAP Level-2A products: names, metadata, discovery in folders and archives, pixel access."""
