"""Datasets (digits, synthetic, CIFAR-10/100, ImageFolder), batched transforms and streams."""

from diffnas.data.datasets import Dataset, ImageSet, load_dataset
from diffnas.data.loader import BatchStream, CyclingStream, SearchData, prepare_dataset, search_data

__all__ = [
    "BatchStream",
    "CyclingStream",
    "Dataset",
    "ImageSet",
    "SearchData",
    "load_dataset",
    "prepare_dataset",
    "search_data",
]
