from ecosort_common.testing import service_fixtures
from ecosort_locations.config import Settings
from ecosort_locations.main import create_app

token_issuer, settings, app, client = service_fixtures("ecosort_locations", Settings, create_app)
