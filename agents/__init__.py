"""Who acts in a CardTwin run: citizens (columnar), validators, outlets and clearing nodes."""
