"""KL vs steering size: the analysis, its command and its report."""
