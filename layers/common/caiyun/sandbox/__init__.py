"""The local sandbox: caiyun dev, its fake outside services and its demo data."""
