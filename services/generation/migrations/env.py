from libs.migrations import run
from services.generation.models import Base

run(Base.metadata)
