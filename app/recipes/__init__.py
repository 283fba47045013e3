"""Recipes: how an image was made, embedded in every downloaded file and read back from one."""
