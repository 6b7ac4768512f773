"""scikit-learn's estimator checks on small, fast configurations.

The two classifiers are checked here. The other public estimators run the
same ``parametrize_with_checks`` in their own files, next to their tiny
configurations: DECClusterer (test_dec.py), MixtureOfAutoencodersClusterer
(test_mixae.py), NeighborVoteRouter (test_routing.py) and
FineTunedEnsembleClassifier (test_baselines.py). No estimator has an expected
failure at present; each one added must carry its reason.
"""

from sklearn.cluster import KMeans
from sklearn.utils.estimator_checks import parametrize_with_checks

from hemoe_sk import HierarchicalEmbeddingMoEClassifier, MixtureOfExpertsClassifier

# Tiny networks and trees: the checks fit hundreds of times. lr is raised so a
# few epochs reach the accuracy check_classifiers_train demands (0.83).
TINY_TREE = dict(
    max_epochs=15,
    expert_max_epochs=3,
    lr=0.02,
    batch_size=32,
    max_depth=1,
    n_clusters_grid=(2,),
    min_cluster_size=5,
    clusterer=KMeans(n_init=1),
    embedder__hidden_dims=(16,),
    random_state=0,
)

TINY_MOE = dict(
    n_experts=2,
    expert_hidden=(16,),
    gate_hidden=(),
    max_epochs=15,
    lr=0.03,
    batch_size=64,
    random_state=0,
)

ESTIMATORS = [
    HierarchicalEmbeddingMoEClassifier(**TINY_TREE),
    HierarchicalEmbeddingMoEClassifier(routing="soft", expert="head", **TINY_TREE),
    MixtureOfExpertsClassifier(gating="soft", **TINY_MOE),
    MixtureOfExpertsClassifier(gating="topk", k=1, **TINY_MOE),
    MixtureOfExpertsClassifier(gating="guided", **TINY_MOE),
]

EXPECTED_FAILED_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
