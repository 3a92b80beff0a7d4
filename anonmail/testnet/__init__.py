"""Private test networks on loopback: Tor (:mod:`.tor`), I2P (:mod:`.i2p`) and whole anonmail networks."""
