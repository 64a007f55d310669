"""Data preprocessing (seed §2.1, §3.1, §4.1): cleaning, augmentation, input compression."""
