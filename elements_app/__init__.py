"""Elements: the team's custom elements and the vendor's presets."""
