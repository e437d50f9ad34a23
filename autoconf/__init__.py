"""The on-boot agent that turns machines booting the OAR Live image into one OAR cluster."""
