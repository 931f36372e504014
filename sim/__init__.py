"""CardTwin simulation engine and domain services (no UI, no CLI parsing)."""
