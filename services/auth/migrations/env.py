from libs.migrations import run
from services.auth.models import Base

run(Base.metadata)
