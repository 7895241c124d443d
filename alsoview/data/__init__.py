"""Raw Amazon data: parsing (pure), generation, text embedding and the prepare pipeline."""
