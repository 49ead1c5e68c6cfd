"""What a search would refuse before training, checked without writing anything.

`taskscout validate` runs the same checks, so a study it calls valid never fails in `search`
after work it could have refused: the loss weighting's name, the storage URL, the run directory.
(The seed's range and the other settings are rules of the spec; the data is checked by the data
stage.)
"""

from __future__ import annotations

from taskscout import rundir
from taskscout.errors import SpecError
from taskscout.spec import StudySpec
from taskscout.weighting import get_weighting


def check_search_settings(spec: StudySpec) -> None:
    """Raise SpecError for a setting the search could only refuse once started."""
    get_weighting(spec.training.weighting)
    if spec.search.storage is not None:
        check_storage_url(spec.search.storage)
    rundir.check_can_create(spec.run_dir)


def check_storage_url(url: str) -> None:
    """Raise SpecError unless `url` parses as a database URL whose back end SQLAlchemy knows
    (without connecting: the server may not be up yet)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    from taskscout.search.storage import mask_url

    example = "give a database URL such as sqlite:///study.db or postgresql+psycopg2://user@host/db"
    try:
        make_url(url).get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise SpecError(f"--storage {mask_url(url)!r} names a database kind SQLAlchemy does not know; {example}") from None
    except sqlalchemy.exc.ArgumentError:
        raise SpecError(f"--storage {mask_url(url)!r} is not a database URL; {example}") from None
    except ImportError as e:
        raise SpecError(f"--storage {mask_url(url)!r} needs the Python package {e.name!r}, which is not installed; "
                        f"install it or {example}") from None
