"""What every part of distloop shares: settings and defaults, errors, the wire codec, TLS."""
