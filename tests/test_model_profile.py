"""The normal profile: what it learns from reference rows, how it explains records, and that it
is read back only as the signed manifest lists it (real registry, real keys)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from model import registry
from model.detector import fit_isolation_forest
from model.features import frame_from_records
from model.profile import PROFILE_FILE, NormalProfile, load_profile
from schemas.records import NETWORK
from tests.factories import network_record
from transforms.cleaning import clean_record


def _frame(records):
  return frame_from_records(NETWORK, [clean_record(NETWORK, r) for r in records])


@pytest.fixture(scope='module')
def normal_frame():
  return _frame([network_record(i) for i in range(400)])


def test_profile_ranges_and_shares(normal_frame):
  profile = NormalProfile.fit(NETWORK, normal_frame)
  src = profile.numeric['src_bytes']
  assert src['low'] >= 200 and src['high'] <= 299 and 200 <= src['median'] <= 299
  assert profile.categorical['service']['shares'] == {'http': 1.0}
  assert profile.rows == 400


def test_reasons_name_the_features_unlike_normal_furthest_first(normal_frame):
  profile = NormalProfile.fit(NETWORK, normal_frame)
  odd = _frame([network_record(1), network_record(2, attack=True),
                network_record(3, src_bytes=5_000_000, num_failed_logins=4)])
  reasons = profile.reasons(odd, top_k=3)
  assert len(reasons) == 3
  assert reasons[0] == []  # a normal record has nothing unlike normal
  smurf = reasons[1]
  assert len(smurf) == 3
  assert [r['deviation'] for r in smurf] == sorted((r['deviation'] for r in smurf), reverse=True)
  assert all(r['deviation'] > 0 for r in smurf)
  features = {r['feature'] for r in smurf}
  assert features & {'protocol_type', 'service', 'count', 'srv_count', 'src_bytes',
                     'dst_host_count'}
  third = {r['feature']: r for r in reasons[2]}
  assert set(third) == {'src_bytes', 'num_failed_logins'}
  assert third['src_bytes']['value'] == 5_000_000
  assert third['src_bytes']['normal'].endswith(f"{int(third['src_bytes']['normal_high'])}")
  assert third['num_failed_logins']['normal'] == '0 - 0'
  wider = {r['feature']: r for r in profile.reasons(odd, top_k=8)[1]}
  service = wider['service']
  assert service['value'] == 'ecr_i' and service['normal_low'] is None
  assert service['normal'] == "usually 'http' (100%)"
  assert wider['count']['value'] == 511 and wider['count']['deviation'] > 1
  # Every reason is plain JSON (the alert topic carries them).
  json.dumps(reasons, allow_nan=False)


def test_reasons_survive_hostile_values(normal_frame):
  profile = NormalProfile.fit(NETWORK, normal_frame)
  frame = _frame([network_record(1), network_record(2)])
  frame['src_bytes'] = [np.nan, np.inf]
  frame['service'] = pd.Series([None, 'x' * 10_000], dtype=object)
  frame = frame.drop(columns=['dst_bytes'])
  reasons = profile.reasons(frame, top_k=5)
  assert reasons[0] == []
  assert [r['feature'] for r in reasons[1]] == ['service']
  assert len(reasons[1][0]['value']) == 200
  assert profile.reasons(frame.iloc[:0]) == []


def test_reasons_of_numpy_columns_equal_those_of_the_frame(normal_frame):
  """The scoring path hands the profile numpy columns, not a DataFrame: same reasons, hostile
  values included."""
  profile = NormalProfile.fit(NETWORK, normal_frame)
  frame = _frame([network_record(1), network_record(2, attack=True),
                  network_record(3, src_bytes=5_000_000), network_record(4)])
  frame['src_bytes'] = [np.nan, np.inf, 5e6, -0.0]
  frame['service'] = pd.Series([None, 'x' * 10_000, 'http', 'never-seen'], dtype=object)
  frame = frame.drop(columns=['dst_bytes'])
  columns = {name: frame[name].to_numpy() for name in frame.columns}
  expected = profile.reasons(frame, top_k=5)
  assert any(expected), 'the rows must have reasons for this to mean much'
  assert profile.reasons(columns, top_k=5) == expected
  assert profile.reasons({name: values[:0] for name, values in columns.items()}) == []


def test_json_round_trip_keeps_the_reasons(normal_frame):
  profile = NormalProfile.fit(NETWORK, normal_frame)
  again = NormalProfile.from_json(json.loads(profile.to_bytes()))
  odd = _frame([network_record(2, attack=True)])
  assert again.reasons(odd) == profile.reasons(odd)
  with pytest.raises(ValueError, match='not a normal profile'):
    NormalProfile.from_json({'format': 1, 'numeric': 3})
  with pytest.raises(ValueError):
    NormalProfile.from_json({'format': 99})


def test_published_profile_is_verified_like_the_model(tmp_path, normal_frame):
  model_dir = str(tmp_path / 'models')
  model = fit_isolation_forest(NETWORK, normal_frame, n_estimators=10)
  profile = NormalProfile.fit(NETWORK, normal_frame)
  version = registry.publish(model_dir, 'network', model,
                             feature_columns=list(NETWORK.feature_columns), training_rows=400,
                             extra_files={PROFILE_FILE: profile.to_bytes()})
  folder = os.path.join(model_dir, 'network', version)
  loaded = load_profile(folder)
  assert loaded.to_json() == profile.to_json()
  entry = registry.load(model_dir, 'network')
  assert load_profile(entry, model_dir=model_dir).to_json() == profile.to_json()
  assert entry.manifest['files'][PROFILE_FILE]['size_bytes'] == len(profile.to_bytes())
  # An altered profile is refused, as an altered model is.
  with open(os.path.join(folder, PROFILE_FILE), 'r+b') as f:
    f.seek(20)
    f.write(b'9')
  with pytest.raises(registry.ModelIntegrityError, match='sha256'):
    load_profile(folder)


def test_a_version_without_profile_has_none_and_names_stay_plain(tmp_path, normal_frame):
  model_dir = str(tmp_path / 'models')
  model = fit_isolation_forest(NETWORK, normal_frame, n_estimators=10)
  version = registry.publish(model_dir, 'network', model,
                             feature_columns=list(NETWORK.feature_columns), training_rows=400)
  assert load_profile(os.path.join(model_dir, 'network', version)) is None
  for name in ('../x.json', 'manifest.json', 'model.skops', 'a/b'):
    with pytest.raises(registry.ModelIntegrityError):
      registry.publish(model_dir, 'network', model, feature_columns=['a'], training_rows=1,
                       extra_files={name: b'{}'})
