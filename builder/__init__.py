"""Host side of OAR Live: the recipe engine behind build-iso."""
