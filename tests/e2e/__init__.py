"""End-to-end tests: real User-Mode-Linux guests talking through the switch under test."""
