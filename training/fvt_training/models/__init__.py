"""The networks: model factories, the EfficientNet-Lite encoder and its checkpoint reader."""
