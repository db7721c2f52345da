"""The pipeline's stage scripts.

dvc.yaml runs each as ``python -m stages.<name>``, so it imports this tree's petseg.
"""
