from ecosort_common.testing import service_fixtures
from ecosort_users.config import Settings
from ecosort_users.main import create_app

token_issuer, settings, app, client = service_fixtures("ecosort_users", Settings, create_app)
