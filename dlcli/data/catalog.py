"""The dataset kinds: one registry entry per `data.dataset` value, each owning its keys (torch-free).

An entry's fields are the YAML keys of that kind, so a resolved config holds only what means something for its data;
its `read` builds the DataBundle (importing torch and the reader only then) and `describe` answers the input shape
and classes without reading samples where it can. Adding a dataset kind is one class here and a test.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (AfterValidator, Field, NonNegativeFloat, PositiveInt, ValidationInfo, field_validator,
                      model_validator)

from dlcli.augment import AUGMENTS, SEQUENCE_AUGMENTS
from dlcli.errors import closest
from dlcli.registry import Entry, ItemError, Registry, Strict, parse_list

DATASETS = Registry("dataset")

# Notices about old spellings met while validating (`data.synthetic.shape` is now `data.shape`); the CLI prints them.
NOTICES: ContextVar[list[str] | None] = ContextVar("dlcli_data_notices", default=None)


def _notice(text: str) -> None:
    found = NOTICES.get()
    if found is not None and text not in found:
        found.append(text)


def _distinct_columns(v):
    if isinstance(v, list) and (not v or len(set(v)) != len(v)):
        raise ValueError("a list of distinct column names, at least one")
    return v


# The target keys of the kinds that read targets from a table's columns (csv, parquet, text_csv, image_table).
LabelColumn = Annotated[str | list[str], AfterValidator(_distinct_columns), Field(
    description="the target: a column, or a list (several numbers for regression, several 0/1 columns for multilabel)")]
LabelSeparator = Annotated[str | None, Field(min_length=1, description="multilabel: one column of labels joined by "
                                                                       "this (cat|dog)")]
EVERY_TASK = ("classification", "regression", "multilabel")

# Descriptions of the keys the picture kinds share (image folders, image tables, masks, detection layouts).
IMAGE_SIZE_TEXT = "every picture is stretched to this (no crop or padding): one side for a square, or [height, width]"
CHANNELS_TEXT = "1: grayscale, 3: RGB; every picture is converted to it"
STREAM_TEXT = ("decode the pictures per batch in num_workers processes instead of once into memory; auto: stream "
               "when the decoded pixels would take more than 2 GiB")
NUM_WORKERS_TEXT = "processes decoding each batch's pictures when streaming (unused otherwise)"
TRAIN_FILE_TEXT = "a .csv or .parquet file, or a directory whose .csv/.parquet part files are read as one table"
TEST_FILE_TEXT = "the test rows, in the train file's columns; default: test_split of the train file's rows held out"


class DataEntry(Entry):
    """Keys every dataset kind has."""

    val_split: float = Field(0.1, ge=0.0, lt=1.0, description="seeded slice of train held out for validation")
    max_train_samples: PositiveInt | None = Field(None, description="train on a seeded subset of this many "
                                                                    "samples (a quick look at a large dataset)")
    split: Literal["stratified", "random"] = Field(
        "stratified", description="how val/test are cut from train: stratified keeps each class's share in every "
                                  "split; random is how dlcli 0.1 cut them")
    cv_fold: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="[k, K]: the validation split is fold k of K of the rows left after the test cut "
                          "(val_split unused); written into each fold's config by train.cv (dlcli.cv)")

    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the tasks whose targets this kind can give
    folds: ClassVar[bool] = True  # whether read() cuts its validation split with Splitter.cut_val (train.cv works)

    @field_validator("cv_fold")
    @classmethod
    def _fold(cls, v):
        if v is not None and not (v[1] >= 2 and v[0] <= v[1]):
            raise ValueError(f"[{v[0]}, {v[1]}]: expected [k, K] with 1 <= k <= K and K >= 2")
        return v

    @property
    def dataset(self) -> str:
        return self.entry_name

    def augmentations(self) -> list:
        return []

    def describe(self, seed: int = 0, task=None) -> tuple[tuple[int, ...], list[str], int | None]:
        """(input shape without the batch axis, output names (classes), vocabulary size for token data or None)."""
        bundle = self.read(seed, task=task)
        return bundle.input_shape, bundle.classes, bundle.vocab_size

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        """The DataBundle: splits, classes, normalisation; `preprocessing` is a run's stored fit (evaluate, predict)."""
        from dlcli.data.bundle import split_raw

        return split_raw(self.read_raw(seed), self, seed)

    def read_raw(self, seed: int):
        """The dataset as read (dlcli.data.loaders.Raw), before splitting."""
        raise NotImplementedError


class ImageEntry(DataEntry):
    augment: list[Any] = Field([], description="augmentations applied to each training batch on the device, in "
                                               "order: hflip, random_crop, affine, ... (see Image augmentations)")

    @field_validator("augment")
    @classmethod
    def _augments(cls, v):
        return parse_list(AUGMENTS, v)

    def augmentations(self) -> list:
        return self.augment


# ---------------------------------------------------------------- built-in image sets


class BuiltinImages(ImageEntry):
    root: str = Field("data", description="where files are looked for, downloaded and cached")
    download: bool = Field(True, description="download through torchvision when the files are not found")

    shape: ClassVar[tuple[int, ...]] = ()
    classes: ClassVar[tuple[str, ...] | None] = None
    torchvision: ClassVar[str] = ""  # torchvision's class for the download
    debian: ClassVar[str | None] = None  # folder under /usr/share/datasets from Debian's dataset-* packages
    reader: ClassVar[str] = ""  # idx or cifar: the function in dlcli.data.loaders

    def read_raw(self, seed):
        from dlcli.data.loaders import load_builtin

        return load_builtin(self)

    def describe(self, seed: int = 0, task=None):
        classes = list(self.classes) if self.classes else [str(i) for i in range(100)]  # CIFAR-100's come with files
        return self.shape, classes, None


DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@DATASETS.register("mnist")
class MNIST(BuiltinImages):
    shape, classes, torchvision, debian, reader = (1, 28, 28), DIGITS, "MNIST", "mnist", "idx"


@DATASETS.register("fashion_mnist")
class FashionMNIST(BuiltinImages):
    shape, classes, torchvision, debian, reader = (1, 28, 28), FASHION, "FashionMNIST", "fashion-mnist", "idx"


@DATASETS.register("kmnist")
class KMNIST(BuiltinImages):
    shape, classes, torchvision, debian, reader = (1, 28, 28), KMNIST, "KMNIST", "kmnist", "idx"


@DATASETS.register("cifar10")
class CIFAR10Data(BuiltinImages):
    shape, classes, torchvision, reader = (3, 32, 32), CIFAR10, "CIFAR10", "cifar"


@DATASETS.register("cifar100")
class CIFAR100Data(BuiltinImages):
    shape, torchvision, reader = (3, 32, 32), "CIFAR100", "cifar"


# ---------------------------------------------------------------- synthetic


SYNTHETIC_KEYS = ("shape", "num_classes", "train_samples", "test_samples", "noise")


@DATASETS.register("synthetic")
class Synthetic(ImageEntry):
    """Seeded random data with real signal: each class is a noisy copy of its own random prototype."""

    shape: list[PositiveInt] = Field([1, 28, 28], min_length=1, description="each sample's shape without the batch "
                                     "axis: [channels, height, width] for pictures, [features] for vectors")
    num_classes: int = Field(10, ge=2, description="classes, each a random prototype of standard normal values")
    train_samples: PositiveInt = Field(1000, description="samples drawn for training (validation is cut from them)")
    test_samples: PositiveInt = Field(200, description="samples drawn for the test split")
    noise: NonNegativeFloat = Field(1.0, description="standard deviation of the Gaussian noise added to a sample's "
                                                     "prototype (whose values have standard deviation 1): larger is "
                                                     "harder")

    @model_validator(mode="before")
    @classmethod
    def _flatten_old_section(cls, data):
        """The old spelling nested these keys under `synthetic:`; accept it and say the new one."""
        if isinstance(data, dict) and isinstance(data.get("synthetic"), dict):
            data = dict(data)
            nested = data.pop("synthetic")
            for key, value in nested.items():
                data.setdefault(key, value)
            _notice("data.synthetic.* keys now sit directly under data: write data.shape, data.num_classes, ... "
                    "(the nested form still works)")
        return data

    def read_raw(self, seed):
        from dlcli.data.loaders import load_synthetic

        return load_synthetic(self, seed)

    def describe(self, seed: int = 0, task=None):
        return tuple(self.shape), [f"class_{i}" for i in range(self.num_classes)], None


# ---------------------------------------------------------------- image folders


@DATASETS.register("image_folder")
class ImageFolder(ImageEntry):
    """root/train/<class>/*.png|jpg|..., optional root/val/ and root/test/ with the same class folders."""

    root: str = Field("data", description="the folder holding train/<class>/ (and optional val/ and test/)")
    test_split: float = Field(0.1, ge=0.0, lt=1.0, description="cut from train when there is no test/ folder")
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(32, description=IMAGE_SIZE_TEXT)
    channels: Literal[1, 3] = Field(3, description=CHANNELS_TEXT)
    stream: bool | Literal["auto"] = Field("auto", description=STREAM_TEXT)
    num_workers: int = Field(2, ge=0, le=64, description=NUM_WORKERS_TEXT)
    cache: bool = Field(True, description="keep the decoded pixels in root/.cache/ so the next run over the same "
                                          "files starts at once (not when streaming)")

    def size(self) -> tuple[int, int]:
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)

    def read_raw(self, seed):
        from dlcli.data.folders import load_image_folder

        return load_image_folder(self)

    def describe(self, seed: int = 0, task=None):
        from pathlib import Path

        from dlcli.data.folders import folder_classes

        return (self.channels, *self.size()), folder_classes(Path(self.root)), None


@DATASETS.register("image_table")
class ImageTable(ImageEntry):
    """A CSV or Parquet table: a column of image paths (relative to the table's directory, or absolute) and the
    target columns of any task; the images are decoded, cached or streamed as an image folder's."""

    table_file: str = Field(description=TRAIN_FILE_TEXT)
    test_file: str | None = Field(None, description="the test rows, in table_file's columns; default: test_split "
                                                    "of table_file's rows held out")
    test_split: float = Field(0.1, ge=0.0, lt=1.0, description="held out of table_file when there is no test_file")
    image_column: str = Field("image", description="the column of image paths (relative to the table's directory, "
                                                   "or absolute)")
    label_column: LabelColumn = "label"
    label_separator: LabelSeparator = None
    missing: Literal["error", "drop"] = Field("error", description="a row without an image path or a target: "
                                              "an error naming it, or drop the row")
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(32, description=IMAGE_SIZE_TEXT)
    channels: Literal[1, 3] = Field(3, description=CHANNELS_TEXT)
    stream: bool | Literal["auto"] = Field("auto", description=STREAM_TEXT)
    num_workers: int = Field(2, ge=0, le=64, description=NUM_WORKERS_TEXT)
    cache: bool = Field(True, description="keep the decoded pixels in .cache/ beside the table for the next run "
                                          "over the same files (not when streaming)")

    tasks: ClassVar[tuple[str, ...]] = EVERY_TASK

    size = ImageFolder.size  # (height, width) of image_size

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        from dlcli.data.image_table import read_image_table

        return read_image_table(self, seed, task)

    def describe(self, seed: int = 0, task=None):
        from dlcli.data.image_table import describe_image_table

        return describe_image_table(self, task)


@DATASETS.register("masks")
class Masks(ImageEntry):
    """Pictures with a class index per pixel (task: segmentation): root/images/<split>/NAME.jpg|png beside
    root/masks/<split>/NAME.png, single-channel index masks (0 = background); val/ and test/ optional
    (dlcli.data.segmentation)."""

    root: str = Field("data", description="the folder holding images/<split>/ and masks/<split>/")
    classes: list[str] | None = Field(None, min_length=2, description="class names by mask value, background "
                                      "(0) first; default: classes_file")
    classes_file: str | None = Field(None, description="one class name a line, by mask value (relative to root; "
                                     "default root/classes.txt)")
    ignore_index: int = Field(255, ge=0, le=255, description="mask value of pixels scored nowhere (loss, metrics)")
    test_split: float = Field(0.1, ge=0.0, lt=1.0, description="cut from train when there is no test/ folder")
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        64, description="pictures are stretched to this (bilinear), their masks too (nearest, so every pixel keeps "
                        "a class): one side for a square, or [height, width]")
    channels: Literal[1, 3] = Field(3, description=CHANNELS_TEXT)
    cache: bool = Field(True, description="keep the decoded pictures and masks in root/.cache/ for the next run "
                                          "over the same files")

    tasks: ClassVar[tuple[str, ...]] = ("segmentation",)
    folds: ClassVar[bool] = False  # its reader cuts val_split itself

    size = ImageFolder.size  # (height, width) of image_size

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("class names must be distinct")
        return v

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        from dlcli.data.segmentation import read_masks

        return read_masks(self, seed)

    def survey(self, report, seed: int = 0, task=None) -> None:
        """`dlcli data check`: every bad mask or orphan file, pixels per class, background-only pictures."""
        from dlcli.data.segmentation import survey_masks

        survey_masks(self, report)

    def describe(self, seed: int = 0, task=None):
        from dlcli.data.segmentation import class_names

        return (self.channels, *self.size()), class_names(self), None


# ---------------------------------------------------------------- tables and texts


class FileEntry(DataEntry):
    """Your own files: a CSV or Parquet file, or a directory of part files, with a label column."""

    train_file: str = Field(description=TRAIN_FILE_TEXT)
    test_file: str | None = Field(None, description=TEST_FILE_TEXT)
    test_split: float = Field(0.1, ge=0.0, lt=1.0, description="held out of train_file when there is no test_file")
    label_column: LabelColumn = "label"
    label_separator: LabelSeparator = None

    tasks: ClassVar[tuple[str, ...]] = EVERY_TASK

    def label_list(self) -> list[str]:
        return list(self.label_column) if isinstance(self.label_column, list) else [self.label_column]

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        from dlcli.data.tables import read_table

        return read_table(self, seed, preprocessing, task=task)

    def describe(self, seed: int = 0, task=None):
        from dlcli.data.tables import read_table

        return read_table(self, seed, encode=False, task=task)  # reads and fits, but encodes nothing


class TableEntry(FileEntry):
    categorical: Literal["auto"] | list[str] = Field(
        "auto", description="the columns one-hot encoded (with a slot for a missing or unseen value), every other "
                            "feature read as numbers; auto: those whose training values are not 90% numbers")
    drop_columns: list[str] = Field([], description="columns left out of the features: ids, row numbers, names, "
                                                    "anything known only after the label")
    missing: Literal["fill", "drop", "error"] = Field(
        "fill", description="a row with a gap in a feature: fill (a number column's training mean, a categorical "
                            "column's missing slot), drop the row, or an error naming it")
    stream: bool | Literal["auto"] = Field(
        "auto", description="read and encode in record batches into a memory-mapped cache beside the data instead "
                            "of in memory; auto: stream a table larger than half the free memory")


@DATASETS.register("csv")
class CSVTable(TableEntry):
    """A CSV table (a .parquet train_file is read as Parquet all the same)."""


@DATASETS.register("parquet")
class ParquetTable(TableEntry):
    """A Parquet table (a .csv train_file is read as CSV all the same)."""


class Tokenizer(Strict):
    lowercase: bool = Field(True, description="lowercase the text before splitting it")
    pattern: str = Field(r"[\w']+", description="a regular expression: every match is a token (the default: runs "
                                                "of letters, digits, _ and ')")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v):
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"not a regular expression ({err})") from None
        return v


class Vocabulary(Strict):
    min_freq: PositiveInt = Field(1, description="tokens seen fewer times than this in the training texts are "
                                                 "unknown")
    max_size: PositiveInt = Field(20000, description="the most frequent tokens kept, besides padding and unknown")


@DATASETS.register("text_csv")
class TextCSV(FileEntry):
    """Texts in a CSV (or Parquet) file: a text column and a label column."""

    text_column: str = Field("text", description="the column holding the texts")
    tokenizer: Tokenizer = Field(Tokenizer(), description="how a text is split into tokens")
    vocab: Vocabulary = Field(Vocabulary(), description="which training tokens get an id (the rest share unknown's)")
    max_length: PositiveInt = Field(200, description="tokens kept from the start of each text; shorter texts are "
                                                     "padded with id 0")


# ---------------------------------------------------------------- numeric sequences


@DATASETS.register("sequences")
class Sequences(DataEntry):
    """Numeric series (N, T, C) for classification or regression: a .npz (x, y, optional lengths), a wide table
    (one row a series, one column per step) or a long table (one row a time step, id_column naming its series).
    Unequal lengths are padded with NaN after each series' end (dlcli.data.sequences)."""

    train_file: str = Field(description="a .npz (x, y, optional lengths), or a .csv/.parquet table (or a directory "
                                        "of part files)")
    test_file: str | None = Field(None, description="the test series (a file as train_file takes, with its "
                                                    "channels); default: test_split of the series held out")
    test_split: float = Field(0.1, ge=0.0, lt=1.0, description="held out of train_file when there is no test_file")
    label_column: LabelColumn = Field("label", description="the target column(s) of a table; a .npz names its y "
                                                           "(N, targets) with these")
    layout: Literal["auto", "wide", "long"] = Field("auto", description="of a table: auto is long when id_column "
                                                    "is set, else wide (a .npz is a .npz)")
    id_column: str | None = Field(None, description="long: the column naming each row's series (wide: a column "
                                                    "kept out of the steps, naming rows)")
    time_column: str | None = Field(None, description="long: orders each series' steps (else the file's order)")
    max_length: PositiveInt | None = Field(None, description="longer series keep their first max_length steps")
    normalize: Literal["channel", "series", "none"] = Field(
        "channel", description="channel: per-channel mean/std of the training split; series: each series "
                               "z-normalised on its own (UCR); none")
    augment: list[Any] = Field([], description="augmentations applied to each training batch, in order: jitter, "
                                               "scaling, window_slice (see Sequence augmentations)")

    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression")
    folds: ClassVar[bool] = False  # its reader cuts val_split itself: no cross-validation folds yet

    @field_validator("augment")
    @classmethod
    def _augments(cls, v):
        return parse_list(SEQUENCE_AUGMENTS, v)

    def augmentations(self) -> list:
        return self.augment

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        from dlcli.data.sequences import read_sequences

        return read_sequences(self, seed, preprocessing, task)


# ---------------------------------------------------------------- time series to forecast


@DATASETS.register("series")
class Series(DataEntry):
    """One or many time-ordered series in a CSV/Parquet table, cut into (lookback -> horizon) windows on the fly;
    the test window is each series' last `horizon` steps, validation the horizon(s) before (dlcli.data.series)."""

    train_file: str = Field(description="a .csv or .parquet file (or a directory of part files): one row per "
                                        "time step")
    time_column: str = Field("date", description="dates or timestamps (ISO 8601), or numbers counting steps")
    label_column: LabelColumn = Field("value", description="the series' value to forecast, or a list of columns")
    id_column: str | None = Field(None, description="the column naming each row's series, for many series in one "
                                                    "table (one global model)")
    covariates: list[str] = Field([], description="other numeric columns read as inputs (their past only)")
    known_ahead: list[str] = Field([], description="numeric columns known for the forecast horizon too (a planned "
                                   "price, a holiday flag): read over the lookback and the horizon; predict's history "
                                   "file ends with the horizon's rows, targets empty")
    calendar: list[Literal["month", "day_of_week", "day_of_month", "hour"]] = Field(
        [], description="features of each step's date, known ahead: each the sine and cosine of its place in its "
                        "cycle")
    lookback: PositiveInt = Field(24, description="steps of history each forecast reads")
    horizon: PositiveInt = Field(12, description="steps forecast at once; the test split is each series' last "
                                                 "horizon steps")
    season: PositiveInt | None = Field(None, description="steps per season for MASE and the seasonal naive "
                                                         "forecast; default from the frequency (12 monthly, 4 "
                                                         "quarterly, 7 daily, 24 hourly, 48 half-hourly)")
    normalize: Literal["window", "season", "series"] = Field(
        "window", description="series: each series scaled by its training part's mean and std; window: also "
                              "each window's own mean taken off its inputs and added back to its forecast; season: "
                              "inputs as window, and the network forecasts the change from last season's values")
    stride: PositiveInt = Field(1, description="steps between consecutive training windows")
    val_split: int = Field(1, ge=0, le=100, description="validation windows per series, each a horizon before "
                                                        "the test horizon; 0: none")
    val_windows: PositiveInt | None = Field(
        None, description="validation windows per series, their origins spread evenly over the val_split horizons "
                          "held out (overlapping when more than val_split): a steadier val_loss; default one a horizon")

    @field_validator("val_windows")
    @classmethod
    def _rolling_fits(cls, value, info: ValidationInfo):
        if value is None or "horizon" not in info.data or "val_split" not in info.data:
            return value
        horizon, held = info.data["horizon"], info.data["val_split"]
        room = (held - 1) * horizon + 1  # distinct origins whose targets stay inside the held-out horizons
        if value > max(room, 0):
            need = 1 + -(-(value - 1) // horizon)
            raise ValueError(f"{value} windows need {value} distinct origins, and val_split: {held} horizon(s) of "
                             f"{horizon} steps give {max(room, 0)}: set data.val_split to {need} or more")
        return value

    tasks: ClassVar[tuple[str, ...]] = ("forecast",)
    folds: ClassVar[bool] = False  # time-ordered windows: no shuffled cross-validation folds

    def target_list(self) -> list[str]:
        return list(self.label_column) if isinstance(self.label_column, list) else [self.label_column]

    def describe(self, seed: int = 0, task=None):
        """From the keys alone: windows of (lookback, targets + covariates), horizon x targets outputs."""
        from dlcli.data.series import known_count, output_names, window_length

        targets = self.target_list()
        levels = task.head_levels() if hasattr(task, "head_levels") else []
        channels = len(targets) + len(self.covariates) + known_count(self)
        return (window_length(self), channels), output_names(targets, self.horizon, levels), None

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        from dlcli.data.series import read_series

        return read_series(self, seed, preprocessing, task)


# ---------------------------------------------------------------- detection layouts


class DetectionEntry(ImageEntry):
    """Pictures with boxes around their objects (task: detection), read as the layout's tools write them
    (dlcli.data.detection): targets [class, x1, y1, x2, y2] in the model's input pixels, pictures decoded and cached
    as an image folder's."""

    test_split: float = Field(0.1, ge=0.0, lt=1.0, description="cut from train when the layout has no test split")
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        128, description="every picture is stretched to this (one side, or [height, width]); boxes move with it")
    channels: Literal[1, 3] = Field(3, description=CHANNELS_TEXT)
    stream: bool | Literal["auto"] = Field("auto", description=STREAM_TEXT)
    num_workers: int = Field(2, ge=0, le=64, description=NUM_WORKERS_TEXT)
    cache: bool = Field(True, description="keep the decoded pixels (and a COCO JSON's parsed listing) in .cache/ "
                                          "beside the annotations for the next run (not when streaming)")
    bad_boxes: Literal["error", "drop"] = Field("error", description="a box outside its picture or of zero area: "
                                                "an error naming it, or drop the box (counted in a note)")

    tasks: ClassVar[tuple[str, ...]] = ("detection",)

    size = ImageFolder.size  # (height, width) of image_size

    def listing(self, problems):
        """The layout as read (dlcli.data.detection.Listing); `problems` raises or collects bad data."""
        raise NotImplementedError

    def class_names(self) -> list[str]:
        from dlcli.data.detection import problems_for

        return self.listing(problems_for(self)).classes

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        from dlcli.data.detection import read_detection

        return read_detection(self, seed, task)

    def describe(self, seed: int = 0, task=None):
        return (self.channels, *self.size()), self.class_names(), None

    def survey(self, report, seed: int = 0, task=None) -> None:
        """`dlcli data check`: every bad box and file, boxes per class and size, pictures without objects."""
        from dlcli.data.detection import survey_detection

        survey_detection(self, report)


@DATASETS.register("coco")
class COCO(DetectionEntry):
    """COCO instances JSONs (bbox [x, y, w, h] in pixels, category_id, categories) and their pictures' folders;
    val and test optional (cut from train); crowd boxes (iscrowd: 1) are left out of the targets. Under task:
    segmentation, each object's polygons or RLE are painted into a mask (background 0, crowds ignored)."""

    train_annotations: str = Field(description="the training split's instances JSON")
    train_images: str | None = Field(None, description="its pictures' folder (default: found beside the JSON: its "
                                     "folder, its parent, images/, train*/)")
    val_annotations: str | None = Field(None, description="the validation split's instances JSON; default: "
                                                          "val_split of train held out")
    val_images: str | None = Field(None, description="its pictures' folder (default: found beside the JSON)")
    test_annotations: str | None = Field(None, description="the test split's instances JSON; default: test_split "
                                                           "of train held out")
    test_images: str | None = Field(None, description="its pictures' folder (default: found beside the JSON)")

    # task: segmentation paints the objects' polygons or RLE into masks (dlcli.data.coco_masks)
    tasks: ClassVar[tuple[str, ...]] = ("detection", "segmentation")

    def listing(self, problems):
        from dlcli.data.detection import read_coco

        return read_coco(self, problems)

    def class_names(self) -> list[str]:
        from pathlib import Path

        from dlcli.data.detection import coco_categories

        return coco_categories(Path(self.train_annotations))[1]

    def read(self, seed: int, preprocessing: dict | None = None, task=None):
        if _segmenting(task):
            from dlcli.data.coco_masks import read_coco_masks

            return read_coco_masks(self, seed)
        return super().read(seed, preprocessing, task)

    def describe(self, seed: int = 0, task=None):
        if _segmenting(task):
            from pathlib import Path

            from dlcli.data.coco_masks import class_names

            return (self.channels, *self.size()), class_names(self.class_names(), Path(self.train_annotations)), None
        return super().describe(seed, task)

    def survey(self, report, seed: int = 0, task=None) -> None:
        """`dlcli data check`: as for detection, and under task: segmentation every object's outline painted (each
        bad one listed) and the pixels of each class."""
        super().survey(report, seed, task)
        if _segmenting(task):
            from dlcli.data.coco_masks import survey_coco_masks

            survey_coco_masks(self, report)


def _segmenting(task) -> bool:
    """Whether the task takes a mask per picture (its spatial targets), as segmentation does."""
    return task is not None and task.spatial == "mask"


@DATASETS.register("yolo")
class YOLO(DetectionEntry):
    """YOLO labels (`class cx cy w h` normalised, one .txt per picture under labels/ for images/): Ultralytics'
    data.yaml, or a root with images/<split>/ and labels/<split>/ and the class names given."""

    data_yaml: str | None = Field(None, description="Ultralytics' data.yaml (path, train, val, test, names)")
    root: str | None = Field(None, description="instead of data_yaml: holds images/<split>/ and labels/<split>/ "
                             "(or <split>/images/ and <split>/labels/)")
    names: list[str] | None = Field(None, min_length=1, description="class names by index (default: data.yaml's)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.data_yaml is None) == (self.root is None):
            raise ValueError("give data_yaml (Ultralytics' data.yaml) or root (images/ and labels/), one of them")
        return self

    def listing(self, problems):
        from dlcli.data.detection import read_yolo

        return read_yolo(self, problems)

    def class_names(self) -> list[str]:
        from pathlib import Path

        from dlcli.data.detection import read_data_yaml

        if self.names:
            return list(self.names)
        if self.data_yaml:
            return read_data_yaml(Path(self.data_yaml))["names"]
        return super().class_names()  # says what is missing


@DATASETS.register("voc")
class VOC(DetectionEntry):
    """Pascal VOC: root/Annotations/*.xml, root/JPEGImages/, splits from root/ImageSets/Main/<split>.txt (else every
    annotation is train)."""

    root: str = Field("data", description="the folder holding Annotations/, JPEGImages/ and ImageSets/Main/")
    classes: list[str] | None = Field(None, min_length=1, description="class names by index (default: the names "
                                      "in the training annotations, sorted)")
    difficult: bool = Field(False, description="keep objects marked difficult (VOC's evaluation ignores them)")

    def listing(self, problems):
        from dlcli.data.detection import read_voc

        return read_voc(self, problems)


# ---------------------------------------------------------------- parsing the `data:` section


def _owners(key: str) -> list[str]:
    return [name for name in DATASETS.names() if key in DATASETS.entries[name].model_fields]


# Keys the one flat schema of dlcli 0.1 had: a run directory written then records all of them for every kind.
OLD_FLAT_KEYS = frozenset(
    "root download val_split test_split max_train_samples augment synthetic image_size channels stream num_workers "
    "train_file test_file label_column categorical missing text_column tokenizer vocab max_length".split()
)


def parse_data(value: Any, legacy: bool = False) -> DataEntry:
    """The `data:` mapping -> its kind's entry. Errors read `@.key: what` (the config adds `data`).

    legacy: the mapping is a resolved config of an older dlcli (a run's config.yaml), which recorded every key of
    every kind; keys foreign to this kind are dropped instead of refused.
    """
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping with a `dataset` key, e.g. data: {{dataset: mnist}}, not {value!r:.60}")
    if "dataset" not in value:
        raise ValueError(f"@.dataset: required key is missing (one of {', '.join(DATASETS.names())})")
    name = value["dataset"]
    if not isinstance(name, str):
        raise ValueError(f"@.dataset: must be a string naming the dataset, not {name!r:.40}")
    if name not in DATASETS.entries:
        raise ValueError(f"@.dataset: unknown dataset '{name}'{closest(name, DATASETS.entries)}")
    fields = DATASETS.entries[name].model_fields
    args = {k: v for k, v in value.items() if k != "dataset"}
    if legacy:
        args = {k: v for k, v in args.items() if k in fields or k not in OLD_FLAT_KEYS or
                (k == "synthetic" and name == "synthetic")}
        args.setdefault("split", "random")  # runs recorded before stratified splits: rebuild theirs as they were
    try:
        return DATASETS.parse({name: args}, path_has_name=False)
    except ItemError as err:
        key = err.where.lstrip(".").split(".")[0]
        if err.what.startswith("unknown key") and key not in fields:
            owners = _owners(key)
            if owners:  # a key of another kind: say whose it is rather than guess a spelling
                raise ValueError(f"@.{key}: not a key of the {name} dataset (it belongs to "
                                 f"{', '.join(owners)}; {name} takes {', '.join(sorted(fields))})") from None
        raise ValueError(f"@{err.where}: {err.what}") from None


def data_spec(entry: DataEntry) -> dict:
    """The resolved `data:` section: the kind and every one of its keys, nothing of other kinds."""
    out = {"dataset": entry.entry_name, **entry.model_dump(mode="json")}
    if isinstance(entry, (ImageEntry, Sequences)):
        out["augment"] = [a.to_spec() for a in entry.augment]
    return out


def describe(cfg) -> tuple[tuple[int, ...], list[str], int | None]:
    """(input shape without the batch axis, output names, vocabulary size or None) of the configured dataset."""
    return cfg.data.describe(cfg.seed, task=cfg.task)
