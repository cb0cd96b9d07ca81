"""Port kinds: each module turns OS objects into "frames in, frames out" for the fabric."""
